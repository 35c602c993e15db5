"""Scale with demand: hold requests for a model at zero, ask for one replica, scale idle models down."""
