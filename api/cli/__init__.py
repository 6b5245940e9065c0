"""The `stepline` command line: `main` declares the commands, the other modules do them."""
