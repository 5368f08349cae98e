"""facesfm.solve"""
