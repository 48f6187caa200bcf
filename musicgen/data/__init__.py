"""From corpus files to training data: reading and cleaning tunebooks, the character vocabulary,
the one training/validation split rule, key augmentation, the encoded on-disk cache, control codes
and the tf.data windows.
"""
