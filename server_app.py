"""fedcredit ServerApp: coordinates the banks' rounds and keeps the global model."""

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedcredit.federation import sweep

APP_DIR = Path(__file__).resolve().parent
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    sweep.serve(grid, context.run_config, context.run_id, APP_DIR)
