"""The HTTP API (aiohttp): the LimaCharlie ticketing wire contract of API.md."""
