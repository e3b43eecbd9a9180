"""In-process servers that speak real AWS wire protocols, for tests and benchmarks that moto is too slow for."""
