"""The host side of an SDCore: bus scripts and the runtime that builds them."""
