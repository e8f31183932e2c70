"""The ``ssi-deploy`` command line: thin click wrappers over the library."""
