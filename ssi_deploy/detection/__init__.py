"""Detection: the official Faster R-CNN test path, preprocessing, COCO."""
