"""The ward's system: its own app and database, fed by the clinic's events.

Run its worker with ``taskq worker -A examples.clinic_to_ward.ward:app``; ``WARD_DB`` names
its database file.
"""

from __future__ import annotations

import os
import sqlite3

from taskq import App

app = App("ward")


def open_db(path: str | None = None) -> sqlite3.Connection:
    db = sqlite3.connect(path or os.environ.get("WARD_DB", "ward.db"))
    db.execute("CREATE TABLE IF NOT EXISTS admissions (clinic_id INTEGER PRIMARY KEY, name TEXT, born TEXT,"
               " diagnosis TEXT, bed TEXT)")
    return db


@app.on("patient.*", group="ward")
def on_patient(topic: str, patient: dict) -> None:
    if topic != "patient.registered":
        return
    with open_db() as db:
        # INSERT OR IGNORE on the clinic's id: an event delivered twice admits the patient once.
        db.execute("INSERT OR IGNORE INTO admissions (clinic_id, name, born, diagnosis, bed) VALUES (?, ?, ?, ?, ?)",
                   (patient["clinic_id"], patient["name"], patient["born"], patient["diagnosis"],
                    f"bed {patient['clinic_id']:02d}"))
