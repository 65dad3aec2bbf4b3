"""Object storage for input images and output videos: one interface, two backends.

`supabase.SupabaseStorage` speaks Supabase Storage's HTTP API as the service role;
`local.LocalStorage` keeps files on disk for the embedded default and records each
object in `storage.objects`, so RLS and the SQL API's existence checks mean the
same thing there.
"""

from vidanim.storage.base import ObjectExists, ObjectInfo, SignedUrl, Storage, StorageError

__all__ = ["ObjectExists", "ObjectInfo", "SignedUrl", "Storage", "StorageError"]
