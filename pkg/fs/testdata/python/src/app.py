import alpha
from pkg import beta
import not_in_the_image

def later():
    import unrelated
