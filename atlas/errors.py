"""The one exception type for problems a user can fix (bad config, missing file, corrupt model...)."""


class UserError(Exception):
    """A problem the user caused and can fix; the CLI prints it as one line and exits with code 2."""
