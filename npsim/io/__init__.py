"""Files in and out: data sets (:mod:`.data`), run trajectories (:mod:`.trajectory`) and sweep indexes
(:mod:`.sweep_index`). Nothing here knows of the engine that produces or consumes them."""
