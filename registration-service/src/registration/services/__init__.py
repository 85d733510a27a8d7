"""The domain of the management API.  Each public function owns its transaction."""
