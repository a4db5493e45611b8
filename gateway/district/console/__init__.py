"""The district centre's console: every school on one screen, worst first, read from the district's records.

It sits on the console floor (it reuses the school console's password hashing, login throttle, language and
notes) beside the district's other parts; `users.py` holds the district's own users, sessions and audit log,
`views.py` what the pages read of the records, `app.py` the pages.
"""
