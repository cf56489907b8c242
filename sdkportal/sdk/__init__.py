"""The source of the `foo_sdk` package the portal hands out (built into foo-sdk-<version>.zip).

The portal imports it from here (sdkportal.sdk.foo_sdk) to call the Foo API itself; inside, the SDK
uses relative imports only, so the same files install as the top-level package `foo_sdk`.
"""
