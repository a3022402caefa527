"""Signals of the execution engine.

``execution_ended(sender=Execution, execution=...)`` is sent when an execution reaches a final
state (succeeded, failed, cancelled), inside the transaction that wrote it and after the row is
written. A receiver that acts on the outside world registers its work with
``transaction.on_commit`` (it runs once the final state is committed, in the order registered,
before Conveyor's own follow-up such as advancing the flow the execution is a step of).
"""

from django.dispatch import Signal

execution_ended = Signal()

#: ``execution_retrying(sender=Execution, execution=...)``: an attempt failed and a retry is
#: planned (the execution is ``retrying``); sent like ``execution_ended``.
execution_retrying = Signal()
