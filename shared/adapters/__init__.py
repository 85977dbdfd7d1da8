"""One adapter per outside service. Only `shared.wiring` constructs them."""
