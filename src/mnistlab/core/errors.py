"""The one exception type a user can cause: the CLI turns it into a single line and a non-zero exit."""


class MnistlabError(Exception):
    """A problem the user can fix (bad file, bad option, unknown name). Its message says what to do."""
