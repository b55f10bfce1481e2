"""account: the user's account (profile, export, deletion) and couples' pairing."""
