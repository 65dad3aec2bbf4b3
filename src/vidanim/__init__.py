"""vidanim: animate a user's still image into a video, on Supabase.

The database is the core and the API (``supabase/migrations``); this package is a
thin layer over its functions: settings, database access, the worker, the CLI.
"""

__version__ = "0.1.0"
