"""The seed's hospital: a clinic and a ward, two systems integrated by events.

    python -m examples.clinic_to_ward

Before, a patient seen at the clinic had to register again at the ward. Now the clinic's
system publishes ``patient.registered`` and the ward's system, another app with another
database, subscribes with ``@app.on("patient.*", group="ward")``: each registration at the
clinic shows up in the ward's records. Neither system imports the other's code; they share
only the event's topic and payload.
"""
