"""The web console (`v2x console`): pages for the police, parking operators and the public, served over HTTP by an
aiohttp app that is an ordinary gRPC client of the services, calling them with the signed-in person's own key."""
