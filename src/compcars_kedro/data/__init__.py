"""Reading raw car-photo collections (CompCars layout or a manifest CSV) and cropping them."""
