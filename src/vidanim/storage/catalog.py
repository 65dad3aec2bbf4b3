"""What `storage.objects` holds, read with the service role's database connection.

Supabase's Storage server answers a key that may not see an object (RLS hides it) exactly
as it answers for a missing one: `NoSuchKey`. The database says which it is, whatever key
Storage was given: an object it holds that Storage calls missing is a key fault, never a
missing input.
"""

from __future__ import annotations

from typing import Any, LiteralString

from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

HOLDS: LiteralString = "select exists (select 1 from storage.objects where bucket_id = %s and name = %s)"


class ObjectCatalog:
    def __init__(self, pool: AsyncConnectionPool[Any]):
        self.pool = pool

    async def holds(self, bucket: str, name: str) -> bool:
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(HOLDS, (bucket, name))
            row = await cur.fetchone()
        return bool(row and row[0])
