"""Example automation: post a message to a webhook whenever retrainer promotes a model.

Usage (with ``PREFECT_API_URL`` set to a Prefect server or Cloud workspace)::

    python -m deployments.notify_on_promotion --url https://hooks.example.com/T000/B000

It saves a ``CustomWebhookNotificationBlock`` named ``retrainer-promotions`` and creates the
automation ``retrainer-notify-on-promotion``: on every ``retrainer.model.promoted`` event of any
model, Prefect posts ``{"text": ...}`` with the model, the new and the replaced version and the
reasons. Running it again updates the block and replaces the automation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from retrainer import events

AUTOMATION = "retrainer-notify-on-promotion"
BLOCK = "retrainer-promotions"
SUBJECT = "retrainer promoted {{ event.resource.name }}"
BODY = (
    "{{ event.resource.name }}: v{{ event.payload.champion_after }} replaces "
    "v{{ event.payload.champion_before }} ({{ event.payload.trigger.reason }}). "
    "{{ event.payload.reasons | join('; ') }}"
)


def trigger_spec() -> dict[str, Any]:
    """The automation's trigger: every promotion of any retrainer model."""
    return {
        "type": "event",
        "match": events.model_resources_match(),
        "expect": [events.MODEL_PROMOTED],
        "for_each": ["prefect.resource.id"],
        "posture": "Reactive",
        "threshold": 1,
        "within": 0,
    }


async def create(url: str) -> str:
    """Save the webhook block and (re)create the automation; return the automation id."""
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger

    block = CustomWebhookNotificationBlock(name=BLOCK, url=url, json_data={"text": "{{subject}}: {{body}}"})
    block_id = await block.asave(BLOCK, overwrite=True)
    with contextlib.suppress(ValueError):  # raised when it does not exist yet
        await (await Automation.aread(name=AUTOMATION)).adelete()
    spec = {k: v for k, v in trigger_spec().items() if k != "type"}
    automation = await Automation(
        name=AUTOMATION,
        description="Post to a webhook when retrainer promotes a model.",
        trigger=EventTrigger(**spec),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    ).acreate()
    return str(automation.id)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="webhook URL that receives the notifications")
    print(f"automation {AUTOMATION}: {asyncio.run(create(parser.parse_args().url))}")


if __name__ == "__main__":
    main()
