"""One router per resource; handlers only translate HTTP <-> ``RecommendationService``."""
