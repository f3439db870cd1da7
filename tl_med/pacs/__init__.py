"""Pull a site's studies from its PACS (Orthanc) and follow the PACS's change feed."""
