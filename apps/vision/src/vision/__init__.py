"""twin.cluster's vision service: what a camera frame or an uploaded image shows."""
