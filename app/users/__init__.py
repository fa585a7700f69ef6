"""What the service keeps about users: ``Interactions`` (``interactions``) appends their
events to the stored histories and to item popularity; ``UserErasure`` (``erasure``)
removes a user everywhere the service keeps them, on every replica. Recommendations read
these histories back through the store (app/serving)."""
