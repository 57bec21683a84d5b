import logging

from connectors.base import Connector, ExecutionContext, Result

logger = logging.getLogger("connectors.log")


class LogConnector(Connector):
    """Writes the event to the log and records what it wrote on the attempt.

    For demos and tests: it has no other side effect.
    """

    name = "log"
    actions = ("record",)

    def execute(self, action: str, params: dict, context: ExecutionContext) -> Result:
        message = params.get("message", "")
        logger.info(
            "log connector: event %s (%s) execution %s attempt %s %s",
            context.event_id,
            context.event_type,
            context.execution_id,
            context.attempt,
            message,
        )
        return Result(
            summary={
                "logged": True,
                "event_id": context.event_id,
                "type": context.event_type,
                "message": message,
                "idempotency_key": context.idempotency_key,
            }
        )
