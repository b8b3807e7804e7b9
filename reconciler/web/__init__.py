"""The Flask build / artifact / checkin service and the status page."""
