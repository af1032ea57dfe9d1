"""Runs spread over several machines: Celery workers take one account at a time.

The unit of work is the one the local engine runs, one account (mail, its folder settings,
calendars and contacts, filters) or the public folders' unit: :func:`mailferry.api.migrate_units`
called by a worker's task with that one name. Nothing here plans or copies anything itself:

- :mod:`.app`: the Celery application of a project (broker, queue, the task), its workers'
  settings (late acknowledgement, redelivery after a worker's death), what a worker does when
  the ledger database is unreachable;
- :mod:`.limits`: connection slots, rates and pauses per server for the whole cluster, in Redis;
- :mod:`.batch`: what ``migrate --distributed`` does in the admin's process: submits the run's
  accounts as tasks and follows them (live progress from the workers' events, the same rows,
  summary and exit code as a local run).

The ledger of a distributed run is PostgreSQL (:mod:`mailferry.state.pgledger`): every worker
writes to it, ``report`` and ``verify`` read it, whichever worker did the work.
"""
