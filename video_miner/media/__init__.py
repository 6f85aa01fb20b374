"""How a decoded frame becomes what a player shows: which video track, turned and mirrored by the
display matrix, stretched to square pixels, in 8-bit RGB (HDR tone-mapped), and animated images
decoded as the videos they are. The extract stage and the live sources both go through here."""
