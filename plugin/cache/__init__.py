"""Last good answers: this replica's compact LRU and the fleet's shared Redis store."""
