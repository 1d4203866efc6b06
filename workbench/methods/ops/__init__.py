"""Pure tensor functions shared by the methods (no modules, no state)."""
