"""runlake-client: report runs to runlake without losing an event or breaking the job.

    from runlake_client import Client
    client = Client(component="generator")  # RUNLAKE_URL, RUNLAKE_API_KEY
    with client.run(model="llama-3.1-8b") as run:
        run.metric("loss", 0.42, step=1)
"""

from .client import Batch, Client, Run, RunlakeError, Step
from .config import Settings
from .sender import Counts

__all__ = ["Batch", "Client", "Counts", "Run", "RunlakeError", "Settings", "Step"]
