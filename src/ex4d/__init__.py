"""ex4d: extreme-viewpoint 4D video synthesis from one monocular video."""

__version__ = "0.1.0"
