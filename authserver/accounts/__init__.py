"""Django's account commands as this server needs them (createsuperuser), listed in INSTALLED_APPS
before django.contrib.auth: manage.py runs the command of the first app that has one. Not in
"authserver" itself, whose admin module cannot be imported before django.contrib.auth's."""
