"""The Python client: what an app uses on behalf of a signed-in user.

    client = VidanimClient(PostgresTransport.from_token(dsn, token, jwt_secret=...))
    path = client.upload_image(Path("cat.png"))
    job = client.request_animation(path, prompt="make it wave")
    view = client.wait(job.id)            # follows the job to the end
    view.video_url                        # a fresh signed URL, with view.video_url_expires_at

Two transports behind one interface: `SupabaseTransport` (supabase-py: PostgREST RPC
and Storage with the user's access token; what a deployed app uses) and
`PostgresTransport` (a direct connection acting as the user exactly as PostgREST
would, after verifying the token; for server-side Python, the tests and the demo).
Errors are `vidanim.errors` classes whatever the transport.
"""

from vidanim.client.client import JobView, Quota, TimelineEvent, VidanimClient
from vidanim.client.postgres import PostgresTransport
from vidanim.client.supabase import SupabaseTransport
from vidanim.client.transport import Transport

__all__ = [
    "JobView",
    "PostgresTransport",
    "Quota",
    "SupabaseTransport",
    "TimelineEvent",
    "Transport",
    "VidanimClient",
]
