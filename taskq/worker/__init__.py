"""The worker: a supervisor process (supervisor.py) and its children (child.py).

Empty on purpose: importing any ``taskq.worker.<module>`` runs this file first, so anything
imported here would be imported by every worker module, and the supervisor imports the child.
"""
