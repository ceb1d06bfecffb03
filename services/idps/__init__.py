"""IDPS: traffic events from every source become incidents the police can act on."""
