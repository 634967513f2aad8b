"""ScienceWorld family: ``madopd/ScienceWorld-v0`` (engine imported only when an env is made)."""
