"""Personal data in the log: sessions sealed under their own data keys, and erased by
shredding those keys."""
