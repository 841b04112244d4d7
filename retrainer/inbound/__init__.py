"""Messages from outside: the webhook's message schemas, its gate, the HTTP app and the sender.

Owns what a drift alert or a new-data notice must look like (:mod:`~retrainer.inbound.messages`),
the checks every request passes (:mod:`~retrainer.inbound.gate`: size, type, signature, replay, rate),
the FastAPI receiver that turns accepted messages into events (:mod:`~retrainer.inbound.http`) and
the signed client (:mod:`~retrainer.inbound.sender`). FastAPI and uvicorn live in ``http``, httpx in
``sender``.
"""
