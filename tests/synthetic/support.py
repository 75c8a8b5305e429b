"""Shared by the synthetic-expansion tests: a small, varied QA data set and a project that prepares it."""

from __future__ import annotations

import json
from pathlib import Path

TOPICS = [
    ("reset my password", "Open Settings, choose Security, then press Reset password and follow the e-mail link."),
    ("change the delivery address", "Go to Orders, pick the order, press Edit address before it ships."),
    ("cancel a subscription", "Under Account > Plans press Cancel; you keep access until the period ends."),
    ("get an invoice", "Invoices are under Billing > History; each one downloads as a PDF."),
    ("return a damaged item", "Start a return from the order page and attach a photo of the damage."),
    ("update my card", "Billing > Payment methods lets you add a new card and make it the default."),
    ("track a parcel", "The tracking link is in the shipping e-mail and on the order page."),
    ("delete my account", "Write to privacy@example.com from your account address; we confirm within 7 days."),
    ("use a gift card", "Enter the gift card code at checkout in the Discount field."),
    ("contact a human agent", "Type 'agent' in the chat or call us on weekdays from 9 to 17."),
    ("enable two-factor login", "Security > Two-factor: scan the QR code with an authenticator app."),
    ("change the language", "Settings > Language offers English, German, French and Japanese."),
]


def qa_rows() -> list[dict[str, str]]:
    return [{"question": f"How do I {topic}?", "answer": answer} for topic, answer in TOPICS]


def write_qa(folder: Path) -> Path:
    path = folder / "support.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in qa_rows()), encoding="utf-8")
    return path


def qa_project(root: Path, model_dir: Path, advisor: dict | None = None) -> Path:
    """A project that reads question/answer pairs, splits 50/25/25 (so real rows reach val and test)."""
    from forgellm.config.io import save_config
    from forgellm.config.schema import ForgeConfig

    root.mkdir(parents=True, exist_ok=True)
    data = {
        "model": {"ref": str(model_dir), "max_length": 256, "chat_template": {"name": "chatml"}},
        "data": {"format": "qa", "recipe": {"columns": {"user": "question", "assistant": "answer"}}},
        "preprocessing": {"split": {"train": 0.5, "val": 0.25, "test": 0.25}},
    }
    if advisor:
        data["advisor"] = advisor
    save_config(ForgeConfig.model_validate(data), root / "forge.yaml")
    return root
