from . import delta
