"""The HTTP surface of the tracking path: the operation routes, their typed models, and the route
table the OpenAPI document is generated from."""
