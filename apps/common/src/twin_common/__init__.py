"""What twin.cluster's HTTP services (the voice assistant, the vision service) share."""
