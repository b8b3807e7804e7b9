"""Boot artifacts: build-request digest, CPIO newc overlay, UKI and ISO layout."""
