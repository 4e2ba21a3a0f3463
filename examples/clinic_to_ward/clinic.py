"""The clinic's system: registers patients in its own database and announces them."""

from __future__ import annotations

import sqlite3

from taskq import App

app = App("clinic")


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS patients (id INTEGER PRIMARY KEY, name TEXT, born TEXT, diagnosis TEXT)")
    return db


def register(db: sqlite3.Connection, name: str, born: str, diagnosis: str) -> int:
    """Commit the patient first, then publish: an event never announces a row that isn't there.

    (If the publish fails, the caller sees the error and can publish again; the ward's
    handler is idempotent on the clinic's id, so a repeated event adds no second row.)
    """
    with db:
        patient_id = db.execute("INSERT INTO patients (name, born, diagnosis) VALUES (?, ?, ?)",
                                (name, born, diagnosis)).lastrowid
    app.publish("patient.registered", {"clinic_id": patient_id, "name": name, "born": born, "diagnosis": diagnosis})
    return patient_id
