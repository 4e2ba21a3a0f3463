"""Register three patients at the clinic; watch them appear in the ward's database."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from examples._workers import delete_queues, running_workers, wait_for
from examples.clinic_to_ward import clinic, ward

PATIENTS = [("Li Lei", "1988-03-02", "appendicitis"), ("Han Meimei", "1990-11-17", "fractured wrist"),
            ("Wang Fang", "1975-06-30", "pneumonia")]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="taskq-hospital-"))
    os.environ["WARD_DB"] = str(folder / "ward.db")  # the ward's worker inherits it
    clinic_db = clinic.open_db(str(folder / "clinic.db"))
    ward_queue = "events.ward"
    delete_queues(ward.app, [ward_queue])
    # The ward's worker declares events.ward and binds it to patient.* before the clinic publishes.
    with running_workers(ward.app, "examples.clinic_to_ward.ward:app", queues=[ward_queue]):
        for name, born, diagnosis in PATIENTS:
            patient_id = clinic.register(clinic_db, name, born, diagnosis)
            print(f"clinic: registered #{patient_id} {name}, published patient.registered")
        ward_db = ward.open_db()
        wait_for(lambda: ward_db.execute("SELECT count(*) FROM admissions").fetchone()[0] == len(PATIENTS),
                 what="the ward to admit every patient")
    delete_queues(ward.app, [ward_queue])
    clinic.app.close()
    ward.app.close()
    print(f"clinic database {folder / 'clinic.db'}:")
    for row in clinic_db.execute("SELECT id, name, born, diagnosis FROM patients ORDER BY id"):
        print("  clinic patient", *row, sep=" | ")
    print(f"ward database {folder / 'ward.db'}:")
    for row in ward_db.execute("SELECT clinic_id, name, born, diagnosis, bed FROM admissions ORDER BY clinic_id"):
        print("  ward admission", *row, sep=" | ")


if __name__ == "__main__":
    main()
