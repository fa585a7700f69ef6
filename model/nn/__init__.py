"""MICRec network modules: INMO backbone, modality aggregation, cross-domain alignment."""
