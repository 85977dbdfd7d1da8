"""CoAgentor Outlook Calendar: the application package (domain, adapters, triggers)."""
