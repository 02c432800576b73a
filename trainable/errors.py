"""The base class of errors caused by user input, which the command-line tools show as one line."""


class UserError(ValueError):
    """Bad input from the user: a one-line message that names the value and the fix.

    Every command catches it, prints ``error: MESSAGE`` and exits with status 2, without a
    traceback. Subclasses name the kind of input (config, dataset, checkpoint, ...).
    """


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite, so the run cannot continue.

    Not a UserError: the input was valid, but training with it diverged. The commands print
    the message and exit with status 1.
    """
